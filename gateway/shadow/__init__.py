"""The routing loop's serving half: shadow calls, judged labels, retained requests.

Adaptation (fitting a new classifier artifact from the labels) is offline, in
`gateway_tools`; nothing here trains.
"""
