#!/bin/bash
# The boot of an emulated PYNQ board: run by `finnchain emu up` (emu/cluster.py) as the first
# process of the board's own PID, mount and UTS namespaces, inside its network namespace.
# Overlays the board's private layers on the machine's folders ($FC_OVERLAID), sets a fresh
# PYNQ image's state on first boot (or what a seeded SD card sets), starts sshd and the services
# enabled on the board, then becomes the board's PID 1 (emu/init.py, passed in $FC_INIT).
# Environment: FC_STATE FC_OVERLAID FC_IMAGE FC_NAME FC_ADDRESS FC_VENV FC_CARD FC_OPERATOR_KEY
# FC_INIT (set by emu/cluster.py's _boot).
set -e
S="$FC_STATE"
for d in $FC_OVERLAID; do
  mkdir -p "$S/upper/$d" "$S/work/$d"
  lower="/$d"
  if [ -d "$FC_IMAGE/$d" ]; then lower="$FC_IMAGE/$d:/$d"; fi
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$S/upper/$d,workdir=$S/work/$d" "/$d"
done
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
hostname "$FC_NAME"
if [ ! -e /etc/finnchain-emu-board ]; then   # first boot: the state of a fresh PYNQ image
  echo "$FC_NAME" > /etc/hostname
  sed -i "/finnchain-emu/d" /etc/hosts; echo "$FC_ADDRESS $FC_NAME # finnchain-emu" >> /etc/hosts
  id xilinx >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo xilinx
  echo 'xilinx:xilinx' | chpasswd; echo 'root:xilinx' | chpasswd
  rm -f /etc/ssh/ssh_host_*
  cp "$FC_STATE/hostkey/ssh_host_ed25519_key" "$FC_STATE/hostkey/ssh_host_ed25519_key.pub" /etc/ssh/
  chmod 600 /etc/ssh/ssh_host_ed25519_key
  mkdir -p /etc/ssh/sshd_config.d /etc/network/interfaces.d
  printf 'ListenAddress %s\nPasswordAuthentication yes\nUseDNS no\n' "$FC_ADDRESS" \
    > /etc/ssh/sshd_config.d/99-pynq-image.conf
  printf 'auto eth0\niface eth0 inet dhcp\n\nauto eth0:1\n%s\n' \
    'iface eth0:1 inet static\naddress 192.168.2.99\nnetmask 255.255.255.0' \
    > /etc/network/interfaces.d/eth0
  printf 'source %s/bin/activate\n' "$FC_VENV" > /etc/profile.d/pynq_venv.sh
  echo "$FC_NAME" > /etc/finnchain-emu-board
  if [ -n "$FC_OPERATOR_KEY" ]; then   # as a seeded card: the operator's key for xilinx,
    mkdir -p /home/xilinx/.ssh && echo "$FC_OPERATOR_KEY" > /home/xilinx/.ssh/authorized_keys
    chmod 700 /home/xilinx/.ssh && chmod 600 /home/xilinx/.ssh/authorized_keys
    chown -R xilinx:xilinx /home/xilinx/.ssh   # and sudo for the key's holder, no password
    echo 'xilinx ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/finnchain
    chmod 440 /etc/sudoers.d/finnchain
  fi
  if [ -n "$FC_CARD" ]; then       # booted from a seeded card: what it sets wins
    (cd "$FC_CARD" && find . -type f) | while read -r f; do   # files only: no parent's mode
      mkdir -p "/$(dirname "$f")"; cp -p "$FC_CARD/$f" "/$f"
    done
    [ -d /home/xilinx/.ssh ] && chown -R xilinx:xilinx /home/xilinx/.ssh
    hostname "$(cat /etc/hostname)"
  fi
fi
rm -f /usr/bin/systemctl   # no systemd here (removed in the board's overlay: the machine keeps its own)
mkdir -p /run/sshd
/usr/sbin/sshd
for s in /etc/rc2.d/S*; do        # what was enabled on the board, as sysvinit starts it
  [ -e "$S/upper/etc/rc2.d/$(basename "$s")" ] || continue   # not the machine's own services
  if [ -x "$s" ]; then "$s" start || true; fi
done
echo "board $FC_NAME up"
exec /usr/bin/python3 -c "$FC_INIT"   # PID 1 from now on: emu/init.py
