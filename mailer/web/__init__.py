"""The FastAPI app: public pages (archive, subscribe, unsubscribe) and the admin API."""
