"""The trigger service: campaigns that turn what people do into outbound messages.

The core (definitions, inputs, match, schedule, caps, channels, render, message, core) is pure:
every function takes ``now`` explicitly and returns new state plus actions; Kafka stays in the
adapter that feeds it.
"""
