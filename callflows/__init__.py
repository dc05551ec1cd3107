"""Call flows built with esl-app. ``callflows.demo`` is the example app README walks through."""
