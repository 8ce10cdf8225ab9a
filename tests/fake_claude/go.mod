module devbox.test/fakeclaude

go 1.21
