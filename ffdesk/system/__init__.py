"""Operating-system integration that is not Qt: autostart at login (no Qt, no psycopg)."""
