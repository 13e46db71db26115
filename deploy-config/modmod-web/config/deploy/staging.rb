# The staging stage of modmod-web.
server "staging.modmod-web.example.com", user: "deploy", roles: %w[app web]
