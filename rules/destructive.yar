// Commands that destroy data or the machine.

rule wipe_filesystem {
  meta:
    category = "destructive"
    severity = "critical"
    message = "deletes a home directory, the root file system or a disk"
  strings:
    $rm = /\brm\s+(-[a-zA-Z]+\s+)*-(rf|fr|Rf|rF|fR|FR|rfv|vrf|frv)\s+(--no-preserve-root\s+)?["']?(\/|\/\*|~|~\/|~\/\*|\$HOME|\$HOME\/|\$HOME\/\*|\/home|\/Users|\/etc|\/usr|\/var|\/boot)["']?(\s|[;&|)`]|\n)/
    $nopreserve = "--no-preserve-root"
    $mkfs = /\bmkfs(\.[a-z0-9]+)?\s+(-[a-zA-Z]+\s+)*\/dev\/(sd|nvme|hd|disk|xvd|vd|mmcblk)/
    $dd = /\bdd\s+if=\/dev\/(zero|urandom|random)\s+of=\/dev\/(sd|nvme|hd|disk|xvd|vd|mmcblk)/
    $fork = /:\(\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:/
    $rmtree = /\bshutil\.rmtree\s*\(\s*(os\.path\.expanduser\(\s*['"]~\/?['"]\s*\)|Path\.home\(\)|['"]\/['"]|os\.environ\[['"]HOME['"]\])\s*\)/
    $ps = /\bRemove-Item\b[^\n]{0,60}(C:\\\\?\s|\$env:USERPROFILE|\$HOME|~)[^\n]{0,40}-Recurse/i
  condition:
    any of them
}
