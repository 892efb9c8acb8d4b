"""Sending email from jobs: the message's bytes, reused SMTP connections and pipelined mail
transactions, with failures sorted into transient (retried) and permanent ones."""
