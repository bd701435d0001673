"""Reports: the comparison table, JSON, and the HTML page with charts."""
