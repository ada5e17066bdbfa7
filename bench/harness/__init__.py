"""`probserve bench`: load-test the service against a naive FastAPI baseline and the ORT ceiling."""
