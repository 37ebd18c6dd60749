#!/bin/sh
# Molecule's inventory of the emulated boards, as an Ansible inventory script: the inventory
# `finnchain emu up` writes (inventory/emulated.yml, made by create.yml), and no boards before
# it exists. Molecule links its hosts to a file that must exist when the scenario starts, which
# on a fresh clone the generated inventory does not.
here=$(dirname "$(readlink -f "$0")")
inventory="$here/../../inventory/emulated.yml"
if [ "$1" = "--list" ] && [ -f "$inventory" ]; then
    exec ansible-inventory -i "$inventory" --list
fi
echo '{"_meta": {"hostvars": {}}}'
