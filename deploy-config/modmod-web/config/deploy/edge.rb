# The edge stage of modmod-web.
server "edge.modmod-web.example.com", user: "deploy", roles: %w[app web]
