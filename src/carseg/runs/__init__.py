"""What the entry points share: the project's paths, one message and exit status 2 for a user's
mistake, one run per folder, and the report of a sweep."""
