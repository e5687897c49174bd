DROP FUNCTION connection_utilisation();
