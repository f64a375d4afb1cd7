"""Network transports: WebSocket server, TCP source, MQTT source and sink, and their shared wire protocol."""
