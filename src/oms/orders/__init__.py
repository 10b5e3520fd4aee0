"""The order domain: state machine, repository, use cases shared by the API and the worker."""
