"""GenOS: describe a computer in a sentence, get a sandboxed Linux desktop.

How the package is laid out (arrows point one way, see ARCHITECTURE.md):

- ``spec``: ``EnvironmentSpec``, the one type every part shares.
- ``errors``: the error tree, rooted at ``GenOSError``.
- ``composer/``: text -> spec, clarification or rejection; the knowledge base.
- ``cli``: the ``genos`` command.
"""

import logging

__version__ = "0.1.0"

logging.getLogger("genos").addHandler(logging.NullHandler())
