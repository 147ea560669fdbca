"""Local development helpers: embedded servers (services.py) and the `make up` supervisor (up.py)."""
