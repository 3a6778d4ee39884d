"""Who may call the scorer: API tokens with scopes (``tokens``), which scope each route needs
(``policy``), and the check in front of every request (``guard``)."""
