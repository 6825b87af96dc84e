"""Users, passwords, tokens and request identity; the database enforces what they may see."""
