"""Pass-through middleware: pcap capture and fault injection."""
