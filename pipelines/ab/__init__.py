"""A/B analysis: statistics over arrays (`stats`) and the report built from decision + feedback logs (`report`)."""
