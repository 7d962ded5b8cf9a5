"""Channel layers of our own (the in-memory and Redis layers come from channels and channels-redis)."""
