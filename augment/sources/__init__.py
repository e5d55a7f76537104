"""Where samples come from: folders, HTTP, the sample data, the shapes a dataset may take."""
