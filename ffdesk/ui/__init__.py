"""The desktop app: Qt widgets, models, tray and graphs on top of the node engine."""
