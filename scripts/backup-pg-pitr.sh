#!/usr/bin/env bash
# Physical backup and point-in-time recovery (PITR) of the institution's PostgreSQL server:
# a base backup (pg_basebackup) plus every WAL segment archived by the server's
# archive_command, restored into a NEW data directory up to a named restore point, a time or
# an LSN. Run it as the PostgreSQL service user (`sudo -u postgres`), never as root.
#
#   backup-pg-pitr.sh archive WAL_PATH WAL_NAME ARCHIVE_DIR
#       the server's archive_command (postgresql.conf, needs wal_level=replica, archive_mode=on):
#       archive_command = '/opt/safescan/scripts/backup-pg-pitr.sh archive %p %f /backup/wal'
#       copies the segment in durably (fsync, then link into place); an existing file of that
#       name is accepted only if identical, anything else is refused (the archive is never
#       overwritten).
#   backup-pg-pitr.sh base DB_URL OUT_DIR
#       pg_basebackup (plain format, WAL streamed in, fast checkpoint, backup manifest) into
#       OUT_DIR (must not exist), then pg_verifybackup. DB_URL carries no password (~/.pgpass
#       or PGPASSFILE); the role needs REPLICATION.
#   backup-pg-pitr.sh mark DB_URL NAME
#       a named restore point (pg_create_restore_point; superuser, or EXECUTE granted), then
#       the current WAL segment is switched and archived; waits until the archiver has it.
#   backup-pg-pitr.sh switch DB_URL
#       only the switch-and-wait-until-archived part (what a restore by time or LSN needs:
#       WAL written after the target must be in the archive).
#   backup-pg-pitr.sh restore BASE_DIR ARCHIVE_DIR NEW_DATA_DIR (--name N | --time T | --lsn L)
#       copies the base backup into NEW_DATA_DIR (must not exist), checks it (pg_verifybackup),
#       and configures recovery: restore_command from ARCHIVE_DIR, the target, the base
#       backup's timeline, promote when reached. Start the server on NEW_DATA_DIR then.
#   backup-pg-pitr.sh promoted DB_URL [SECONDS]
#       waits until the server started on NEW_DATA_DIR has reached the target and promoted
#       (pg_is_in_recovery() is false); fails if it stops or times out (default 120 s).
#
# After the restore the database is older than what the institution acknowledged: run
# `safescan institution reconcile --note "PITR to ..."` then `safescan institution audit`
# (docs/operations.md, "Physical backup and point-in-time recovery"). Tested by
# tests/institution/test_pitr.py.
set -euo pipefail

die() { echo "backup-pg-pitr: $*" >&2; exit 1; }

pg_bin() {  # a PostgreSQL client program: on PATH, else the newest Debian server's
  local name=$1 d
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$d/$name" ]]; then echo "$d/$name"; return; fi
  done
  die "$name not found (Debian package postgresql-client)"
}

check_url() {
  local url=$1
  [[ $url == postgres://* || $url == postgresql://* ]] || die "DB_URL must be postgresql://..."
  if [[ $url =~ ^[a-z]+://[^/@]*:[^/@]*@ ]]; then
    die "DB_URL must not carry a password (it would show in the process list): use ~/.pgpass or PGPASSFILE"
  fi
}

not_root() {
  [[ $(id -u) -ne 0 ]] || die "run as the PostgreSQL service user (sudo -u postgres $0 ...), not as root"
}

safe_text() {  # goes into postgresql.auto.conf between single quotes
  [[ $2 != *"'"* && $2 != *'\'* && $2 != *$'\n'* && -n $2 ]] || die "$1 must be non-empty, without quotes, backslashes or newlines"
}

sql() { "$(pg_bin psql)" -X -q -At -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

wait_archived() {  # the segment holding LSN $2 is archived
  local url=$1 lsn=$2 wal i
  wal=$(sql "$url" "SELECT pg_walfile_name('$lsn')")
  for ((i = 0; i < 600; i++)); do
    if [[ $(sql "$url" "SELECT coalesce(last_archived_wal >= '$wal', false) FROM pg_stat_archiver") == t ]]; then
      return 0
    fi
    sleep 0.1
  done
  die "WAL segment $wal was not archived within 60 s (check archive_command and the server log)"
}

switch_wal() {
  local url=$1 lsn
  lsn=$(sql "$url" "SELECT pg_switch_wal()")
  wait_archived "$url" "$lsn"
  echo "$lsn"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
  archive)
    [[ $# -eq 3 ]] || die "usage: archive WAL_PATH WAL_NAME ARCHIVE_DIR"
    src=$1 name=$2 dir=$3
    [[ $name =~ ^[0-9A-Za-z._-]+$ && $name != .* ]] || die "not a WAL file name: $name"
    [[ -d $dir ]] || die "no archive directory $dir"
    [[ -f $src ]] || die "no WAL file $src"
    dest="$dir/$name"
    if [[ -e $dest ]]; then
      cmp -s "$src" "$dest" && exit 0  # archived before (a retry after a crash): same bytes
      die "$dest exists with other content: refusing to overwrite the archive"
    fi
    tmp="$dir/.$name.partial.$$"
    trap 'rm -f "$tmp"' EXIT
    cp "$src" "$tmp"
    sync "$tmp"
    if ! ln "$tmp" "$dest" 2>/dev/null; then  # never replaces a file that appeared meanwhile
      cmp -s "$src" "$dest" || die "$dest appeared with other content: refusing to overwrite it"
    fi
    sync "$dir"
    ;;
  base)
    [[ $# -eq 2 ]] || die "usage: base DB_URL OUT_DIR"
    url=$1 out=$2
    check_url "$url"; not_root
    [[ ! -e $out ]] || die "$out exists: a base backup goes into a new directory"
    [[ -d $(dirname "$out") ]] || die "no directory $(dirname "$out")"
    "$(pg_bin pg_basebackup)" -d "$url" -D "$out" -Fp -X stream --checkpoint=fast \
      --manifest-checksums=SHA256 --label "safescan-$(date -u +%Y%m%dT%H%M%SZ)" --no-password \
      || { rm -rf "$out"; die "pg_basebackup failed; nothing kept"; }
    "$(pg_bin pg_verifybackup)" -q "$out" || die "pg_verifybackup refused $out"
    echo "base backup written: $out ($(head -n 1 "$out/backup_label"))"
    ;;
  mark)
    [[ $# -eq 2 ]] || die "usage: mark DB_URL NAME"
    url=$1 name=$2
    check_url "$url"
    [[ $name =~ ^[A-Za-z0-9._:-]{1,60}$ ]] || die "restore point names: letters, digits, . _ : - (at most 60)"
    lsn=$(sql "$url" "SELECT pg_create_restore_point('$name')")
    switch_wal "$url" >/dev/null
    echo "restore point $name at $lsn (archived)"
    ;;
  switch)
    [[ $# -eq 1 ]] || die "usage: switch DB_URL"
    check_url "$1"
    echo "archived up to $(switch_wal "$1")"
    ;;
  restore)
    [[ $# -eq 5 ]] || die "usage: restore BASE_DIR ARCHIVE_DIR NEW_DATA_DIR (--name N | --time T | --lsn L)"
    base=$1 archive=$2 new=$3 kind=$4 target=$5
    not_root
    case "$kind" in
      --name) setting=recovery_target_name ;;
      --time) setting=recovery_target_time ;;
      --lsn)
        [[ $target =~ ^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$ ]] || die "not an LSN: $target"
        setting=recovery_target_lsn ;;
      *) die "say where to stop: --name NAME, --time 'YYYY-MM-DD HH:MM:SS+00' or --lsn X/Y" ;;
    esac
    safe_text "the target" "$target"
    safe_text "ARCHIVE_DIR" "$archive"
    [[ $archive == /* && $archive != *'"'* && $archive != *%* ]] || die "ARCHIVE_DIR must be an absolute path without \" or %"
    [[ -f $base/backup_label && -f $base/backup_manifest ]] || die "$base is no base backup (no backup_label/backup_manifest)"
    [[ -d $archive ]] || die "no WAL archive directory $archive"
    [[ ! -e $new ]] || die "$new exists: restore only into a new data directory"
    [[ -d $(dirname "$new") ]] || die "no directory $(dirname "$new")"
    "$(pg_bin pg_verifybackup)" -q "$base" || die "pg_verifybackup refused $base: not restoring it"
    partial="$new.partial.$$"
    trap 'rm -rf "$partial"' EXIT
    cp -a "$base" "$partial"
    chmod 700 "$partial"
    rm -f "$partial/backup_manifest"
    touch "$partial/recovery.signal"
    {
      echo "# point-in-time recovery ($(date -u +%FT%TZ)), written by backup-pg-pitr.sh restore"
      echo "restore_command = 'cp \"$archive/%f\" \"%p\"'"
      echo "$setting = '$target'"
      echo "recovery_target_timeline = 'current'"
      echo "recovery_target_action = 'promote'"
    } >>"$partial/postgresql.auto.conf"
    sync -f "$partial/postgresql.auto.conf"
    mv -T "$partial" "$new"
    trap - EXIT
    echo "restored into $new; start PostgreSQL on it, then: $0 promoted DB_URL"
    ;;
  promoted)
    [[ $# -ge 1 && $# -le 2 ]] || die "usage: promoted DB_URL [SECONDS]"
    url=$1 limit=${2:-120}
    check_url "$url"
    [[ $limit =~ ^[0-9]+$ ]] || die "SECONDS must be a whole number"
    for ((i = 0; i < limit * 5; i++)); do
      state=$(sql "$url" "SELECT pg_is_in_recovery()" 2>/dev/null || true)
      if [[ $state == f ]]; then echo "recovered and promoted"; exit 0; fi
      sleep 0.2
    done
    die "the server did not finish recovery within $limit s (its log says why: a target never reached is fatal)"
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
