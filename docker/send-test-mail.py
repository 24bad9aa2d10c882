"""One-shot client for docker/compose.yaml: sends a test message to contoso over STARTTLS
(verified against the fixture CA), addressed to bob@fabrikam.test, so contoso relays it to
fabrikam through the to-fabrikam connector. Exits non-zero if the message is not accepted."""

import smtplib
import ssl
import sys
import time

HOST = "mx.contoso.test"
CA = "/etc/sealpost/fixtures/pki/ca.crt"
MESSAGE = (
    "From: alice@contoso.test\r\n"
    "To: bob@fabrikam.test\r\n"
    "Subject: hello from the compose client\r\n"
    "Message-ID: <compose-client@client.test>\r\n"
    "\r\n"
    "Hi Bob, this came through two containers.\r\n"
)

ctx = ssl.create_default_context(cafile=CA)
for attempt in range(10):
    try:
        with smtplib.SMTP(HOST, 25, timeout=10) as s:
            s.ehlo("client.test")
            s.starttls(context=ctx)
            s.ehlo("client.test")
            refused = s.sendmail("alice@contoso.test", ["bob@fabrikam.test"], MESSAGE)
            print(f"sent to {HOST}: refused={refused}")
            sys.exit(1 if refused else 0)
    except (OSError, smtplib.SMTPException) as e:
        print(f"attempt {attempt + 1}: {e}", file=sys.stderr)
        time.sleep(2)
sys.exit(1)
