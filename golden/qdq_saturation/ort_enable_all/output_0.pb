
BlogitsJ(;!RBÜÃB?'B²þ^AÅCÅÁÜÃÂF:	@3õ¢Á/_‹BØˆ+A