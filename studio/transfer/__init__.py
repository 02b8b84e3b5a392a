"""Inside the transfer: which backbone to start from (LogME ranking), which layers carry over,
several tasks on one backbone."""
