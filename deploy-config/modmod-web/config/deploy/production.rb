# The production stage of modmod-web.
server "app1.modmod-web.example.com", user: "deploy", roles: %w[app web]
server "app2.modmod-web.example.com", user: "deploy", roles: %w[app web]
