#!/usr/bin/env bash
# A real mail provider on loopback for the demo and the end-to-end tests: Postfix (submission
# with STARTTLS + AUTH, SMTPS + AUTH, and AUTH without TLS for loopback) delivering into Maildirs,
# and Dovecot (IMAP with STARTTLS, IMAPS, POP3 with STLS, POP3S) reading them, with its SASL checking Postfix's logins.
# Everything lives in one private directory; nothing of the system's mail configuration is used.
#
#   scripts/mailserver.sh start DIR user@domain:password ...
#   scripts/mailserver.sh stop DIR
#
# Ports come from the environment (defaults below) and are written to DIR/ports.env.
# The server's TLS certificate (for "localhost" and 127.0.0.1) is issued by DIR/tls/ca.pem.
# Must run as root (Postfix's master drops privileges to the postfix user itself).
set -euo pipefail

cmd=${1:?usage: mailserver.sh start|stop DIR [user@domain:password ...]}
dir=${2:?usage: mailserver.sh start|stop DIR [user@domain:password ...]}
shift 2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

stop() {
  [ -f "$dir/postfix/main.cf" ] && postfix -c "$dir/postfix" stop >/dev/null 2>&1 || true
  if [ -f "$dir/dovecot-run/master.pid" ]; then
    local dpid
    dpid=$(cat "$dir/dovecot-run/master.pid")
    kill "$dpid" 2>/dev/null || true
    # Wait for it to go, so the directory can be removed and the ports reused at once.
    for _ in $(seq 50); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
  fi
}

if [ "$cmd" = stop ]; then
  stop
  exit 0
fi
[ "$cmd" = start ] || { echo "unknown command $cmd" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "mailserver.sh: Postfix and Dovecot need root here" >&2; exit 1; }
for tool in postfix dovecot openssl; do
  command -v "$tool" >/dev/null || { echo "mailserver.sh: $tool is not installed (apt-get install postfix dovecot-imapd dovecot-pop3d openssl)" >&2; exit 1; }
done
[ -e /usr/lib/dovecot/pop3 ] || { echo "mailserver.sh: Dovecot's POP3 server is not installed (apt-get install dovecot-pop3d)" >&2; exit 1; }

: "${SMTP_PLAIN_PORT:=12025}" "${SUBMISSION_PORT:=12587}" "${SMTPS_PORT:=12465}"
: "${IMAP_PORT:=12143}" "${IMAPS_PORT:=12993}" "${POP3_PORT:=12110}" "${POP3S_PORT:=12995}"
cat >"$dir/ports.env" <<EOF
SMTP_PLAIN_PORT=$SMTP_PLAIN_PORT
SUBMISSION_PORT=$SUBMISSION_PORT
SMTPS_PORT=$SMTPS_PORT
IMAP_PORT=$IMAP_PORT
IMAPS_PORT=$IMAPS_PORT
POP3_PORT=$POP3_PORT
POP3S_PORT=$POP3S_PORT
EOF

mkdir -p "$dir"/{tls,log,mail,postfix,spool,data,dovecot-run,dovecot-state}

# --- TLS: a throwaway CA and a server certificate for localhost / 127.0.0.1
if [ ! -f "$dir/tls/server.pem" ]; then
  (
    cd "$dir/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=envelopd test provider CA" \
      -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE \
      -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
      -extfile ext.cnf -out server.pem 2>/dev/null
    chmod 600 ca.key server.key
  )
fi

# --- users: Dovecot checks the passwords (for IMAP and, via its auth socket, for Postfix)
: >"$dir/users"
: >"$dir/postfix/vmailbox"
domains=""
for u in "$@"; do
  addr=${u%%:*}
  pass=${u#*:}
  user=${addr%@*}
  domain=${addr#*@}
  echo "$addr:{PLAIN}$pass" >>"$dir/users"
  echo "$addr $domain/$user/" >>"$dir/postfix/vmailbox"
  case " $domains " in *" $domain "*) ;; *) domains="$domains $domain" ;; esac
  mkdir -p "$dir/mail/$domain/$user"/{new,cur,tmp}
done
chgrp dovecot "$dir/users" 2>/dev/null || true
chmod 640 "$dir/users"
chown -R 5000:5000 "$dir/mail"

# --- Dovecot
cat >"$dir/dovecot.conf" <<EOF
base_dir = $dir/dovecot-run
state_dir = $dir/dovecot-state
log_path = $dir/log/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <$dir/tls/server.pem
ssl_key = <$dir/tls/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$dir/mail/%d/%n
first_valid_uid = 5000
passdb {
  driver = passwd-file
  args = $dir/users
}
userdb {
  driver = static
  args = uid=5000 gid=5000 home=$dir/mail/%d/%n
}
service imap-login {
  inet_listener imap {
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = $IMAPS_PORT
    ssl = yes
  }
}
# POP3 (plain + STLS, and POP3S); UIDLs as many providers make them.
pop3_uidl_format = %08Xu%08Xv
service pop3-login {
  inet_listener pop3 {
    port = $POP3_PORT
  }
  inet_listener pop3s {
    port = $POP3S_PORT
    ssl = yes
  }
}
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
EOF
dovecot -c "$dir/dovecot.conf" </dev/null >/dev/null 2>&1

# --- Postfix
cat >"$dir/postfix/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/spool
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mail.provider.test
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
virtual_mailbox_domains =$domains
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = texthash:$dir/postfix/vmailbox
virtual_uid_maps = static:5000
virtual_gid_maps = static:5000
message_size_limit = 20480000
virtual_mailbox_limit = 0
mailbox_size_limit = 0
default_transport = error:this test provider delivers nowhere else
relay_transport = error:this test provider delivers nowhere else
maillog_file = $dir/log/postfix.log
maillog_file_prefixes = $dir/log
smtpd_tls_cert_file = $dir/tls/server.pem
smtpd_tls_key_file = $dir/tls/server.key
smtpd_sasl_type = dovecot
smtpd_sasl_path = $dir/dovecot-run/auth-postfix
smtpd_sasl_auth_enable = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtputf8_enable = yes
EOF
cat >"$dir/postfix/master.cf" <<EOF
127.0.0.1:$SMTP_PLAIN_PORT inet n - n - - smtpd
  -o smtpd_tls_security_level=none
  -o smtpd_tls_auth_only=no
127.0.0.1:$SUBMISSION_PORT inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
127.0.0.1:$SMTPS_PORT inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
chown -R postfix "$dir/data"
postfix -c "$dir/postfix" check >"$dir/log/postfix-check.log" 2>&1 || true
postfix -c "$dir/postfix" start </dev/null >"$dir/log/postfix-start.log" 2>&1 || {
  echo "mailserver.sh: Postfix did not start; see $dir/log/" >&2
  cat "$dir/log/postfix-start.log" >&2
  exit 1
}

# Wait until every port answers.
for port in $SMTP_PLAIN_PORT $SUBMISSION_PORT $SMTPS_PORT $IMAP_PORT $IMAPS_PORT $POP3_PORT $POP3S_PORT; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || {
    echo "mailserver.sh: nothing listens on port $port; see $dir/log/" >&2
    tail -20 "$dir"/log/*.log >&2
    exit 1
  }
done
echo "mail provider up in $dir (SMTP $SMTP_PLAIN_PORT, submission $SUBMISSION_PORT, SMTPS $SMTPS_PORT, IMAP $IMAP_PORT, IMAPS $IMAPS_PORT, POP3 $POP3_PORT, POP3S $POP3S_PORT)"
