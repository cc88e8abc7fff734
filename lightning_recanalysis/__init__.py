"""lightning_recanalysis: analyse recommendation models while they train."""
