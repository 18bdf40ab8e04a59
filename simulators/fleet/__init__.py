"""Fleet mode: thousands of simulated pairs publishing through a few shared MQTT connections."""
