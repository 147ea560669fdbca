"""The Hypervisor agent: runs a cluster's deployments on this host (RUNTIME.md, "The agent program").

Its own package: it imports nothing of the server's (api/, shared/, worker/), so a host needs only this
folder and Python 3.11.
"""

__version__ = "0.1.0"
