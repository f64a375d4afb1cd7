"""speechstream runtime: frames, events, nodes, the graph, sources, VAD."""
