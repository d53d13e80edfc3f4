"""How results are shown: tables, plots and progress bars. Imported by notebooks and the CLI."""
