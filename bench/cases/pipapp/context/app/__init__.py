"""The pipapp bench case's app: imports the installed packages and prints a line."""
