"""Network transports: the WebSocket server and the TCP source, and the wire protocol they share with MQTT (speechstream.mqtt)."""
