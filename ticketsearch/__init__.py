"""ticketsearch."""
