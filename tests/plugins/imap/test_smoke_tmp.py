from tests.plugins.imap.util import *
def test_smoke(dovecot_mailbox, monkeypatch, tmp_path):
    dovecot_mailbox.append_many("INBOX", corpus(10))
    conn = connector(dovecot_mailbox, monkeypatch, tmp_path)
    with dovecot_mailbox.rawlog() as log:
        msgs, cur, pages = run(conn, {})
    print(log.commands, conn.stats)
    print(cur)
    for m in msgs[:4]: print(m.remote_id, m.subject, repr(m.text), [(a.filename, a.size, a.status) for a in m.attachments])
    conn = connector(dovecot_mailbox, monkeypatch, tmp_path)
    with dovecot_mailbox.rawlog() as log:
        msgs, cur, pages = run(conn, cur)
    print(log.commands, conn.stats, len(msgs))
    print(dovecot_mailbox.server.log_path.read_text()[-2000:])
