"""Clusters: fixed capacity, and the accounting of what is allocated on them."""
