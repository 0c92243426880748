"""The HTTP/WebSocket surface of GenOS.

- ``security``: password and token hashing (argon2id), TOTP (RFC 6238).
"""
