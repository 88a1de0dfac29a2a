"""On-disk formats: berg's native format, and readers for other projects' files."""
