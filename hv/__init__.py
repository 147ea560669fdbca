"""`hv`, the command line of Hypervisor (API.md, "The command line: `hv`").

A package of its own that talks to the API over HTTP only: it imports nothing of the server's.
"""
