// Download-and-execute: a remote script fetched and handed to an interpreter in one step,
// so what runs is whatever the server sends that day.

rule download_pipe_shell {
  meta:
    category = "download_exec"
    severity = "critical"
    message = "downloads a script and pipes it straight into a shell or interpreter"
  strings:
    $sh = /\b(curl|wget|fetch)\b[^\n|;]{0,300}\|\s*(sudo\s+)?(-E\s+)?(\/usr)?(\/bin\/)?(ba|z|da|k|fi)?sh\b/
    $interp = /\b(curl|wget)\b[^\n|;]{0,300}\|\s*(sudo\s+)?(\/usr\/bin\/)?(python[0-9.]*|perl|ruby|node|php)\b/
  condition:
    any of them
}

rule shell_eval_remote {
  meta:
    category = "download_exec"
    severity = "critical"
    message = "runs the output of a download as a command (bash -c \"$(curl ...)\", source <(curl ...))"
  strings:
    $c = /\b(ba|z|da)?sh\s+-c\s+["']?(\$\(|`)\s*(curl|wget)\b/
    $eval = /(\beval|\bsource|[\s;&|]\.)\s+["']?(\$\(|<\(|`)\s*(curl|wget)\b/
    $proc = /\b(ba|z)?sh\s+<\(\s*(curl|wget)\b/
  condition:
    any of them
}

rule powershell_download_exec {
  meta:
    category = "download_exec"
    severity = "critical"
    message = "PowerShell downloads code and runs it (iwr | iex, DownloadString)"
  strings:
    $pipe = /\b(iwr|irm|Invoke-WebRequest|Invoke-RestMethod)\b[^\n]{0,300}\|\s*(iex|Invoke-Expression)\b/i
    $iex = /\b(iex|Invoke-Expression)\s*[\(\s]+(\(?\s*New-Object\s+(System\.)?Net\.WebClient\s*\)?\s*\.DownloadString|iwr|irm|Invoke-WebRequest|Invoke-RestMethod)\b/i
    $dl = /\.DownloadString\s*\(\s*['"]https?:[^\n]{0,300}\b(iex|Invoke-Expression)\b/i
  condition:
    any of them
}

rule download_chmod_execute {
  meta:
    category = "download_exec"
    severity = "high"
    message = "downloads a file, makes it executable and runs it"
  strings:
    $a = /\b(curl|wget)\b[^\n]{0,300}(&&|;|\n)\s*(sudo\s+)?chmod\s+(\+x|[0-7]{3,4}|u\+x|a\+x)\s+[^\n]{0,200}(&&|;|\n)\s*(sudo\s+)?(\.\/|\/tmp\/|~\/|\$HOME|\/var\/tmp\/|\/dev\/shm\/|nohup\s)/
  condition:
    $a
}

rule script_remote_exec {
  meta:
    category = "download_exec"
    severity = "critical"
    message = "code downloads source and executes it in-process (exec(requests.get(...)), eval(await fetch(...)))"
  strings:
    $py = /\b(exec|eval)\s*\(\s*(requests\.get|urllib\.request\.urlopen|urlopen|httpx\.get|urllib2\.urlopen)\s*\(/
    $js = /\b(eval|Function)\s*\(\s*(await\s+)?\(?\s*await\s+(fetch|axios\.get)\s*\(/
    $js2 = /\bnew\s+Function\s*\(\s*(await\s+)?\(?\s*await\s+fetch\s*\(/
  condition:
    any of them
}
