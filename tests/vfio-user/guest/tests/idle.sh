# SPDX-License-Identifier: GPL-2.0-or-later
# An idle guest for the host to work on (bench/migration.sh migrates it):
# it says it is up and sleeps until the host stops it.
echo "idle: up"
sleep 3600
