"""Who may talk to the broker and to Redis: rules generated for Mosquitto and Redis."""
