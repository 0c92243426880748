"""Many hosts, one GenOS: what the control plane and the nodes agree on through etcd.

- ``pki``: the cluster's own CA and its members' certificates (mutual TLS).
- ``etcd``: the etcd client (aetcd over a mutual-TLS gRPC channel) and the
  key layout; ``store``: membership under leases, assignments by
  compare-and-swap, status reports, cordons, leader election.
- ``placement``: which node an environment goes to (requests against free
  capacity, spread or pack).
- ``driver``: the control plane's :class:`~genos.runtime.driver.Driver` for
  the whole cluster: verbs become assignments a node carries out.
- ``local``: a cluster on one machine (three etcd members, PostgreSQL,
  nodes, control-plane replicas) for tests and newcomers;
  ``localpg``: a throwaway PostgreSQL server.

What runs on every host is :mod:`genos.node`.
"""
