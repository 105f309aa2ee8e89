# Sourced by the CI scripts: makes /dev/null the null device again when it is
# not. On some of these machines it is a regular file (something replaced the
# device node): what one step writes to it stays there and the next step reads
# it back. rustc, asked by cargo-miri for a crate's file names with `-` as its
# input and stdin from /dev/null, then compiled the probe output of earlier
# build scripts and failed ("unknown start of token"), which failed the Miri
# step of CI twice.
if [ ! -c /dev/null ]; then
    echo "/dev/null is not the null device ($(stat -c %F /dev/null 2>/dev/null)): recreating it"
    rm -f /dev/null && mknod -m 666 /dev/null c 1 3 ||
        { echo "cannot recreate /dev/null (not root?)" >&2; exit 1; }
fi
