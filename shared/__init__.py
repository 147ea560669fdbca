"""Code shared by the API and the workers: configuration, database, domain services, the scheduler."""
