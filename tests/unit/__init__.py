"""Pure code, no servers: the history, the policy, routing, plans, the context builder, argument schemas, the shell
parser, settings, the catalogue and the compose file."""
