// A stand-in for Claude Code in the test image (the real one needs Anthropic's service).
// From the outside it behaves as Claude Code's documentation says: it reads the same
// settings files (managed, user, project, local), merges their "hooks" arrays, and runs
// each configured command hook through `sh -c` with the event's JSON on stdin at the
// documented moments (SessionStart, UserPromptSubmit, PreToolUse, PostToolUse,
// Notification with notification_type, Stop, SessionEnd), honouring each hook's timeout.
//
// Its "model" is the prompt itself: steps separated by ';'.
//   work N      a Bash tool call that takes N seconds (PreToolUse, PostToolUse)
//   ask TEXT    asks permission for TEXT (Notification permission_prompt), prints the
//               question and waits for a typed line on its terminal
//   say TEXT    prints TEXT
//   run CMD     a Bash tool call that really runs CMD (sh -c, in the working directory)
// After the steps it stops (Stop) and waits for the next prompt on its terminal; "/exit"
// or end of input ends the session (SessionEnd).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type hookCmd struct {
	Type    string  `json:"type"`
	Command string  `json:"command"`
	Timeout float64 `json:"timeout"`
}

type group struct {
	Matcher string    `json:"matcher"`
	Hooks   []hookCmd `json:"hooks"`
}

var hooks = map[string][]group{}
var session = fmt.Sprintf("fake-%d", os.Getpid())
var cwd, _ = os.Getwd()

func load(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var s struct {
		Hooks map[string][]group `json:"hooks"`
	}
	if json.Unmarshal(data, &s) != nil {
		fmt.Fprintf(os.Stderr, "fake-claude: ignoring malformed %s\n", path)
		return
	}
	for event, groups := range s.Hooks { // arrays from every settings file are merged
		hooks[event] = append(hooks[event], groups...)
	}
}

func fire(event string, tool string, extra map[string]any) {
	payload := map[string]any{
		"session_id": session, "transcript_path": filepath.Join(os.TempDir(), session+".jsonl"),
		"cwd": cwd, "hook_event_name": event,
	}
	for k, v := range extra {
		payload[k] = v
	}
	body, _ := json.Marshal(payload)
	for _, g := range hooks[event] {
		if g.Matcher != "" && g.Matcher != "*" && tool != "" && g.Matcher != tool {
			continue
		}
		for _, h := range g.Hooks {
			if h.Type != "command" {
				continue
			}
			timeout := 60.0
			if h.Timeout > 0 {
				timeout = h.Timeout
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(timeout*float64(time.Second)))
			cmd := exec.CommandContext(ctx, "sh", "-c", h.Command)
			cmd.Stdin = bytes.NewReader(body)
			out, _ := cmd.Output()
			cancel()
			if len(bytes.TrimSpace(out)) > 0 && event != "SessionStart" && event != "UserPromptSubmit" {
				fmt.Fprintf(os.Stderr, "fake-claude: hook printed %q\n", out) // would be read as a decision
			}
		}
	}
}

func run(prompt string, in *bufio.Reader) {
	fire("UserPromptSubmit", "", map[string]any{"prompt": prompt})
	for _, step := range strings.Split(prompt, ";") {
		step = strings.TrimSpace(step)
		verb, rest, _ := strings.Cut(step, " ")
		switch verb {
		case "work":
			n, _ := strconv.ParseFloat(rest, 64)
			input := map[string]any{"command": "sleep " + rest}
			fire("PreToolUse", "Bash", map[string]any{"tool_name": "Bash", "tool_input": input})
			fmt.Printf("working for %ss\n", rest)
			time.Sleep(time.Duration(n * float64(time.Second)))
			fire("PostToolUse", "Bash", map[string]any{"tool_name": "Bash", "tool_input": input,
				"tool_response": map[string]any{"stdout": ""}})
		case "ask":
			fire("Notification", "", map[string]any{"notification_type": "permission_prompt",
				"message": "Claude needs your permission to use " + rest})
			fmt.Printf("Allow %s? [y/n] ", rest)
			answer, _ := in.ReadString('\n')
			fmt.Printf("answered %q\n", strings.TrimSpace(answer))
			fire("PostToolUse", "Bash", map[string]any{"tool_name": "Bash", "tool_input": map[string]any{"command": rest}})
		case "say":
			fmt.Println(rest)
		case "run":
			input := map[string]any{"command": rest}
			fire("PreToolUse", "Bash", map[string]any{"tool_name": "Bash", "tool_input": input})
			out, err := exec.Command("sh", "-c", rest).CombinedOutput()
			fmt.Printf("%s", out)
			if err != nil {
				fmt.Printf("run failed: %v\n", err)
			}
			fire("PostToolUse", "Bash", map[string]any{"tool_name": "Bash", "tool_input": input,
				"tool_response": map[string]any{"stdout": string(out)}})
		}
	}
	fire("Stop", "", map[string]any{"stop_hook_active": false})
	fmt.Println("done: your move")
}

func main() {
	home, _ := os.UserHomeDir()
	for _, p := range []string{"/etc/claude-code/managed-settings.json", filepath.Join(home, ".claude", "settings.json"),
		filepath.Join(cwd, ".claude", "settings.json"), filepath.Join(cwd, ".claude", "settings.local.json")} {
		load(p)
	}
	in := bufio.NewReader(os.Stdin)
	fire("SessionStart", "", map[string]any{"source": "startup"})
	prompt := strings.Join(os.Args[1:], " ")
	for {
		if prompt == "/exit" {
			break
		}
		if prompt != "" {
			run(prompt, in)
		}
		fmt.Print("> ")
		line, err := in.ReadString('\n')
		if err != nil {
			break
		}
		prompt = strings.TrimSpace(line)
	}
	fire("SessionEnd", "", map[string]any{"reason": "exit"})
}
