// Reverse shells and remote-control channels.

rule reverse_shell {
  meta:
    category = "remote_access"
    severity = "critical"
    message = "a reverse shell: a shell wired to a network connection"
  strings:
    $devtcp = /\b(ba|z)?sh\s+-i\s*[^\n]{0,20}[<>]&\s*\/dev\/(tcp|udp)\//
    $devtcp2 = /\bexec\s+[0-9]+<>\s*\/dev\/tcp\//
    $nc = /\b(nc|ncat|netcat)\b[^\n]{0,60}\s-(e|c)\s+["']?\/?(bin\/)?(ba|z)?sh\b/
    $fifo = /\bmkfifo\b[^\n]{0,100}\|\s*(\/bin\/)?(ba)?sh\s+-i[^\n]{0,100}\|\s*(nc|ncat|netcat|openssl)\b/
    $socat = /\bsocat\b[^\n]{0,100}exec:["']?(\/bin\/)?(ba)?sh/i
    $pydup = /\bos\.dup2\s*\(\s*[a-z_]+\.fileno\(\)\s*,\s*[012]\s*\)/
    $pty = /\bpty\.spawn\s*\(\s*['"]\/bin\/(ba)?sh['"]/
    $js = /\bchild_process\b[^\n]{0,200}\bspawn\s*\(\s*['"]\/bin\/(ba)?sh['"][^\n]{0,300}\bconnect\s*\(/
    $ps = /New-Object\s+System\.Net\.Sockets\.TCPClient\s*\([^\n]{0,300}(GetStream|iex|Invoke-Expression)/i
  condition:
    any of them
}

rule reverse_tunnel {
  meta:
    category = "remote_access"
    severity = "high"
    message = "opens a reverse tunnel or remote terminal into the machine (ssh -R, tmate, ngrok tcp)"
  strings:
    $ssh = /\bssh\b[^\n]{0,80}\s-R\s*[0-9]/
    $tmate = /\btmate\b[^\n]{0,40}(new-session|-F|show-messages|display\s+-p)/
    $ngrok = /\bngrok\s+tcp\s+(22|3389|5900)\b/
    $bore = /\bbore\s+local\s+22\b/
  condition:
    any of them
}
