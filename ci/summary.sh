#!/usr/bin/env bash
# Print the totals of the last 'make test' as one plain line:
#   total: N passed, M failed
set -uo pipefail
logdir=$1
p=0 f=0 s=0
for part in host rust guest; do
	file=$logdir/$part-total.txt
	if [ -f "$file" ]; then
		read -r a b c < "$file"
		p=$((p + a)) f=$((f + b)) s=$((s + c))
	else
		# A stage that never reported counts as a failure.
		f=$((f + 1))
	fi
done
[ "$s" = 0 ] || echo "skipped: $s"
echo "total: $p passed, $f failed"
