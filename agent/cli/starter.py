"""The commented config `retainer init` writes: every key of `[agent]` and of every
builtin platform's `[sources.settings]` (tests check none is missing)."""

from __future__ import annotations

STARTER_CONFIG = '''\
# Retainer configuration. Reference: README.md ("Configuration").

[agent]
# The store and the deliverable files live here (created 0700).
data_dir = "~/.local/share/retainer"
# Your own addresses: mail from them is outgoing, mail to them is incoming.
owner_emails = ["me@example.com"]
# Attachments larger than this are recorded but not downloaded.
max_attachment_mb = 50
# Unreviewed work older than this is flagged overdue.
review_overdue = "3d"
# First import: work received before this day is stored as already handled, not queued.
# Left out: the day of the first sync. `false`: everything enters the review queue.
# review_since = 2026-01-01
# `retainer run` also serves the dashboard here (`retainer serve` prints its URL).
# web = "127.0.0.1:8765"
# Log level of `retainer run`: DEBUG, INFO (default), WARNING or ERROR.
# log_level = "INFO"

# Optional seed roster. The store holds the live roster (`retainer contractors`).
# [[contractors]]
# name = "Maria Lopez"
# emails = ["maria@example.com"]
# skills = ["logo", "illustration"]

# One [[sources]] table per account (`retainer config check` validates each). `every` is
# how often `retainer run` syncs it. Every key of every platform is below; uncomment what
# you need. configs/retainer.example.toml and README.md ("Platforms") say more.

# [[sources]]
# name = "inbox"
# platform = "imap"
# every = "5m"
# [sources.settings]
# host = "imap.example.com"
# port = 993                # default 993 for tls, 143 for starttls and none
# security = "tls"          # "tls" | "starttls" | "none" (127.0.0.1 only)
# username = "me@example.com"
# password = { env = "RETAINER_IMAP_PASSWORD" }   # never inline: env, command or keyring
# folders = ["INBOX"]
# ca_file = "/etc/ssl/private-ca.pem"              # a server with its own CA
# Gmail and Microsoft 365 sign in with OAuth 2.0 (then `retainer auth inbox`):
# auth = "oauth2"           # "password" (default) | "oauth2"
# provider = "google"       # "google" | "microsoft" | "custom"
# client_id = "1234-abc.apps.googleusercontent.com"
# client_secret = { env = "RETAINER_GOOGLE_SECRET" }
# tenant = "common"         # microsoft: your tenant id or domain
# authorize_url = "https://login.example.com/authorize"   # provider = "custom" only:
# token_url = "https://login.example.com/token"           #   its endpoints
# device_url = "https://login.example.com/device"         #   (optional)
# scopes = ["https://mail.example.com/imap"]              #   and scopes
# batch_size = 200          # messages per FETCH and per page
# timeout = 60              # socket timeout, seconds
# operation_deadline = 300  # longest one IMAP command may take, seconds
# prefetch = true           # fetch the next batch while the last one is stored
# reader_processes = 2      # processes that read fetched messages in a big sync (0: none)
# max_reconnects = 3        # reconnects after a dropped connection, per sync
# [sources.settings.smtp]   # where replies go (`--send`); last in the source
# host = "smtp.example.com"
# port = 587
# security = "starttls"     # "tls" | "starttls" | "none"
# username = "me@example.com"                     # default: the IMAP username
# password = { env = "RETAINER_SMTP_PASSWORD" }   # default: the IMAP password
# from = "Me <me@example.com>"
# ca_file = "/etc/ssl/private-ca.pem"
# timeout = 60

# [[sources]]
# name = "archive"
# platform = "maildir"
# every = "10m"
# [sources.settings]
# path = "~/Mail/work"      # must exist
# folders = ["INBOX", "Sent"]   # default: all
# exclude = ["Trash", "Junk"]
# page_size = 200
# max_message_mb = 100      # bigger message files: header only

# [[sources]]
# name = "upwork-main"
# platform = "upwork"       # then `retainer auth upwork-main` once
# every = "15m"
# [sources.settings]
# client_id = "your-api-key-client-id"
# client_secret = { env = "RETAINER_UPWORK_SECRET" }
# redirect_uri = "https://localhost/retainer/upwork"
# tenant_id = ""            # organization id; empty: your default organization
# contracts = true          # also contracts, milestones and submissions
# download_attachments = true
# rate_per_second = 8.0
# timeout = 30
# max_retries = 4
# page_size = 100
# max_pages = 0             # 0: no limit
# api_url = "https://api.upwork.com/graphql"                            # endpoints:
# auth_url = "https://www.upwork.com/ab/account-security/oauth2/authorize"   # only for
# token_url = "https://www.upwork.com/api/v3/oauth2/token"                   # a test server

# [[sources]]
# name = "freelancer"
# platform = "freelancer"
# every = "15m"
# [sources.settings]
# token = { env = "RETAINER_FREELANCER_TOKEN" }   # a personal OAuth access token
# owner_id = 12345678       # your user id; looked up when left out
# contracts_every_minutes = 30
# rate_per_second = 10.0
# timeout = 30
# max_retries = 4
# page_size = 100
# max_pages = 2000
# threads_per_request = 100
# prefetch_pages = 2
# base_url = "https://www.freelancer.com"         # only for a test server

# Fiverr, Upwork and Freelancer.com notification emails need no settings: they are read
# from every mail source (imap, maildir) and attributed to the freelancer there.
'''
