"""Control flow: If (Loop and Scan to come)."""
