"""The gateway every Serve application shares: who is asking (keys, sessions), what their role
allows, browser-safe mutations, the Host check and per-caller quotas."""
